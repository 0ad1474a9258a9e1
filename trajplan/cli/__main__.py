from trajplan.cli import main

main()
