-- Per-client DPoP policy (PostgreSQL): NULL follows `tokens.dpop`; 'optional' lets a
-- public client in migration (an AppAuth-only app) get short-lived, unbound Bearer tokens;
-- 'required' insists on DPoP even where `tokens.dpop` is optional.
ALTER TABLE clients ADD COLUMN dpop TEXT;
