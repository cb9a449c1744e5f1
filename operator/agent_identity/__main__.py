from agent_identity.app.main import main

main()
