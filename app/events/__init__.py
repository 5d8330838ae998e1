"""Events out: webhook endpoints of platforms, merchants and the programme, and signed deliveries to them."""
