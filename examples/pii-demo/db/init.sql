-- Schema of the PII demo. Runs on every start of the database, inside the
-- application database (bin/mariadb.sh prepends CREATE DATABASE / USE), so
-- every statement must be idempotent.
CREATE TABLE IF NOT EXISTS people (
  id      INT AUTO_INCREMENT PRIMARY KEY,
  name    VARCHAR(200),
  email   VARCHAR(200),
  address VARCHAR(500),
  created TIMESTAMP DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
