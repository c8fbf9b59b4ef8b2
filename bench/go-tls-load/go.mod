module go-tls-load

go 1.19
