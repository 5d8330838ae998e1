"""Shipments with a partner and its key (the logistics fixtures), for evidence too."""

from tests.logistics.conftest import pool as pool
from tests.logistics.conftest import shipping as shipping
