-- App attestation of a session (SQLite): the trust tier decided at sign-in
-- ('attested', 'unattested', 'failed'; NULL when the client has no attestation
-- configured), and for App Attest the attested public key (SEC1, 65 bytes) and the last
-- assertion counter seen, which must grow with every refresh.
ALTER TABLE refresh_families ADD COLUMN tier TEXT;
ALTER TABLE refresh_families ADD COLUMN attest_key BLOB;
ALTER TABLE refresh_families ADD COLUMN attest_counter BIGINT;
