"""The programme's console (`/admin`): pages for the operator, over the API's own services."""
