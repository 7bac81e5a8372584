"""HTTP APIs of the meters app: one APIView per operation (see meters/urls.py for the paths)."""
