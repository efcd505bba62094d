-- Which staging token registered a row: a master restarted after a crash recognises
-- its own registration (and finishes answering it) instead of calling it a duplicate.

ALTER TABLE datasets ADD COLUMN intake_token text;
ALTER TABLE submissions ADD COLUMN intake_token text;
