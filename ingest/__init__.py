"""The aiohttp edge: Talon.One and Amplitude surfaces, auth, acceptance into Redis, read API."""
