-- What the login page shows for a client (SQLite): the app's name as users know it, a link to
-- its privacy notice, and a line on how long a sign-in lasts (NULL: keygate's own line,
-- from the refresh policy).
ALTER TABLE clients ADD COLUMN display_name TEXT;
ALTER TABLE clients ADD COLUMN privacy_url TEXT;
ALTER TABLE clients ADD COLUMN session_note TEXT;
