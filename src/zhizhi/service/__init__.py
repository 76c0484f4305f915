"""The service layer: one handler per use case, a unit of work and an in-process message bus."""
