module go-load

go 1.19
