from bench.quality.report import main

main()
