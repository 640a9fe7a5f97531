from permitchain.cli.main import main

main()
