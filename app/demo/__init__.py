"""`g4g demo`: seeds a programme and drives it end to end through the public HTTP API, as its platform, merchants,
logistics partners and operator would (`command.py` the CLI, `service.py` the service it may start, `programme.py`
the seeded cast and plans, `run.py` the steps, `receiver.py` the platform's endpoint, `summary.py` the figures)."""
