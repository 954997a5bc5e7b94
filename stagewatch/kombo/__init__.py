"""Kombo's ATS API: the client, its paging, its filters, the record models and the errors."""
