from persona.cli import main

main()
