#!/bin/bash
# Runs MariaDB in the foreground for the mysql-server workload of the PII demo.
#
# Everything (data, socket, pid, generated config) lives under $VEIL_POD_DIR, so
# several instances can run on one machine and a re-run reuses the same data.
# The system's /etc/mysql, /var/lib/mysql and /run/mysqld are never used.
#
# Environment:
#   VEIL_POD_DIR            private writable directory (required)
#   VEIL_EXAMPLE_DIR        this example's directory (default: the script's parent)
#   MARIADB_DATABASE        application database   (default: pii)
#   MARIADB_USER            application user       (default: pii)
#   MARIADB_PASSWORD        its password           (required)
#   MARIADB_ROOT_PASSWORD   password for root@localhost (optional)
#   MARIADB_PORT            TCP port               (default: 3306)
set -euo pipefail

log() { echo "mariadb.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

: "${VEIL_POD_DIR:?VEIL_POD_DIR must be set}"
VEIL_EXAMPLE_DIR="${VEIL_EXAMPLE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
DB_NAME="${MARIADB_DATABASE:-pii}"
DB_USER="${MARIADB_USER:-pii}"
DB_PASSWORD="${MARIADB_PASSWORD:?MARIADB_PASSWORD must be set}"
ROOT_PASSWORD="${MARIADB_ROOT_PASSWORD:-}"
PORT="${MARIADB_PORT:-3306}"

[[ "$DB_NAME" =~ ^[A-Za-z0-9_]+$ ]] || die "MARIADB_DATABASE must match [A-Za-z0-9_]+"
[[ "$DB_USER" =~ ^[A-Za-z0-9_]+$ ]] || die "MARIADB_USER must match [A-Za-z0-9_]+"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "MARIADB_PORT must be a number"

MARIADBD="$(command -v mariadbd || true)"
[[ -n "$MARIADBD" ]] || MARIADBD=/usr/sbin/mariadbd
[[ -x "$MARIADBD" ]] || die "mariadbd not found (install mariadb-server)"
command -v mariadb-install-db >/dev/null || die "mariadb-install-db not found (install mariadb-server)"

BASE="$(realpath -m "$VEIL_POD_DIR")/mariadb"
DATADIR="$BASE/data"
RUNDIR="$BASE/run"
TMPDIR_DB="$BASE/tmp"
CNF="$BASE/my.cnf"
INIT="$BASE/init.sql"
MARKER="$DATADIR/.veil-initialised"

mkdir -p "$DATADIR" "$RUNDIR" "$TMPDIR_DB"

if [[ "$(id -u)" -eq 0 ]]; then
    RUN_USER=mysql
    id mysql >/dev/null 2>&1 || die "system user 'mysql' does not exist (install mariadb-server)"
    # The server drops to user mysql, which must be able to reach its files.
    chmod a+x "$VEIL_POD_DIR"
    chown -R mysql:mysql "$BASE"
    chmod 0750 "$BASE"
    if ! runuser -u mysql -- test -w "$DATADIR"; then
        log "warning: user mysql cannot reach $DATADIR (a parent directory is not searchable); running as root"
        RUN_USER=root
        chown -R root:root "$BASE"
    fi
else
    RUN_USER="$(id -un)"
fi

# Own config file: keeps /etc/mysql/my.cnf (and its socket/datadir) out of the way.
cat >"$CNF" <<EOF
[mysqld]
user                    = $RUN_USER
basedir                 = /usr
datadir                 = $DATADIR
tmpdir                  = $TMPDIR_DB
socket                  = $RUNDIR/mysqld.sock
pid-file                = $RUNDIR/mysqld.pid
port                    = $PORT
bind-address            = 0.0.0.0
skip-name-resolve
skip-external-locking
skip-log-bin
character-set-server    = utf8mb4
collation-server        = utf8mb4_general_ci
innodb-buffer-pool-size = 32M
max-connections         = 50

[client]
socket                  = $RUNDIR/mysqld.sock
port                    = $PORT
EOF
[[ "$(id -u)" -ne 0 ]] || chown "$RUN_USER:" "$CNF"

# First run (or an interrupted one): create the system tables.
if [[ ! -f "$MARKER" ]]; then
    log "initialising data directory $DATADIR"
    find "$DATADIR" -mindepth 1 -delete
    # In a process group of its own, so that it can be stopped as a whole.
    setsid mariadb-install-db --defaults-file="$CNF" --user="$RUN_USER" \
        --skip-test-db --skip-name-resolve --auth-root-authentication-method=socket \
        >"$BASE/install-db.log" 2>&1 &
    install_pid=$!
    # A SIGTERM during initialisation stops the initialisation too (the marker stays absent).
    trap 'kill -KILL -- "-$install_pid" 2>/dev/null; wait "$install_pid" || true; exit 143' TERM INT
    wait "$install_pid" || { cat "$BASE/install-db.log" >&2; die "mariadb-install-db failed"; }
    trap - TERM INT
    touch "$MARKER"
    [[ "$(id -u)" -ne 0 ]] || chown "$RUN_USER:" "$MARKER"
else
    log "reusing data directory $DATADIR"
fi

# The init file runs on every start, before the server accepts connections.
sql_string() { local s=${1//\\/\\\\}; s=${s//\'/\\\'}; printf "'%s'" "$s"; }
{
    echo "CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` DEFAULT CHARACTER SET utf8mb4;"
    echo "CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY $(sql_string "$DB_PASSWORD");"
    echo "ALTER USER '$DB_USER'@'%' IDENTIFIED BY $(sql_string "$DB_PASSWORD");"
    echo "GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'%';"
    if [[ -n "$ROOT_PASSWORD" ]]; then
        echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD($(sql_string "$ROOT_PASSWORD"));"
    fi
    echo "FLUSH PRIVILEGES;"
    echo "USE \`$DB_NAME\`;"
    # The server reads the init file one statement per line.
    sed -e 's/--.*$//' "$VEIL_EXAMPLE_DIR/db/init.sql" | tr '\n' ' ' | tr -s ' ' | sed -e 's/; */;\n/g'
    echo
} >"$INIT.tmp"
chmod 0600 "$INIT.tmp"
[[ "$(id -u)" -ne 0 ]] || chown "$RUN_USER:" "$INIT.tmp"
mv -f "$INIT.tmp" "$INIT"

rm -f "$RUNDIR/mysqld.pid" "$RUNDIR/mysqld.sock" "$RUNDIR/mysqld.sock.lock"

log "starting mariadbd on 0.0.0.0:$PORT (socket $RUNDIR/mysqld.sock)"
# exec: mariadbd gets SIGTERM directly and shuts down cleanly.
exec "$MARIADBD" --defaults-file="$CNF" --init-file="$INIT"
