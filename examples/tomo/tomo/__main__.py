from tomo.cli import main

main()
