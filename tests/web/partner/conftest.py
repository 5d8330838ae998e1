"""Shipments with a partner and its key (the logistics fixtures), for the field app too."""

from tests.logistics.conftest import pool as pool
from tests.logistics.conftest import shipping as shipping
