"""Outbound campaigns: customer files, the campaign lifecycle, and the dialer that places their calls."""
