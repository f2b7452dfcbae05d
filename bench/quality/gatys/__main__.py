from bench.quality.gatys.images import main

main()
