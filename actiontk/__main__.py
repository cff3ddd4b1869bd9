from actiontk.cli import main

main()
