"""The admin surface: an aiohttp API and page over the live registry, and its CLI client."""
