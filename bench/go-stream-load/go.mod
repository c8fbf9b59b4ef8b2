module go-stream-load

go 1.19
