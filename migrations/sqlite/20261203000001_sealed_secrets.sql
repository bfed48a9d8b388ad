-- Client secrets and refresh tokens are stored sealed (AES-256-GCM): each column
-- holds base64(nonce ‖ ciphertext ‖ tag), and these name the key that sealed it
-- (an id from SUBKEEPER_SECRET_KEYS). NULL: a value written before sealing
-- existed, still in clear until `subkeeper rotate-key` seals it.
ALTER TABLE oauth_credentials ADD COLUMN client_secret_key text;
ALTER TABLE oauth_credentials ADD COLUMN refresh_token_key text;
