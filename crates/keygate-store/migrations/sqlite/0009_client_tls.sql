-- RFC 8705 client authentication (SQLite): a confidential client may authenticate with a
-- client certificate instead of a secret. `auth_method` is NULL for clients that use a
-- secret (confidential) or none (public); `tls_identity` is JSON: the subject DN or SAN a
-- CA-issued certificate must carry, or the SHA-256 thumbprints of self-signed ones.
ALTER TABLE clients ADD COLUMN auth_method TEXT;
ALTER TABLE clients ADD COLUMN tls_identity TEXT;
