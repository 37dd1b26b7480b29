"""Answer generation: generators that turn retrieved passages into cited answers, and their registry."""
