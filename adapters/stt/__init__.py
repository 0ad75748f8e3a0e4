"""Speech to text: the Whisper transcriber (faster-whisper) and its model provisioning."""
