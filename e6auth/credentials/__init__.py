"""Credentials as they are written and hashed, with no I/O: the Personal Access Token format,
argon2id passwords and the gate that bounds their hashing, the token peppers, user names, and
the secret keys kept beside the embedded database."""
