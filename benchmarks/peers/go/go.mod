module sluice-bench-peer

go 1.19
