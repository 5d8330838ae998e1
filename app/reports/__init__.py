"""Reports: the figures the programme shows the public and its merchants."""
