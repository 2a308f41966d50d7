from rn50.cli import main

main()
