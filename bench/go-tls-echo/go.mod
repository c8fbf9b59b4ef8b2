module go-tls-echo

go 1.19
