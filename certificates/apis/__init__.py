"""The certificates API: producers' and holders' endpoints, operators' actions, public verification."""
