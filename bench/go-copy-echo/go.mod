module go-copy-echo

go 1.19
