#!/bin/bash
# Runs Apache + mod_php in the foreground for the httpd-server workload of the PII demo.
#
# A self-contained config is written under $VEIL_POD_DIR; /etc/apache2 and the
# system apache2 service are never used.
#
# Environment:
#   VEIL_POD_DIR       private writable directory (required)
#   VEIL_EXAMPLE_DIR   this example's directory (default: the script's parent)
#   VEIL_POD_NAME      used as ServerName (default: httpd-server)
#   DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD   passed to PHP (getenv)
#   HTTPD_PORT         listening port (default: 80)
set -euo pipefail

log() { echo "httpd.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

: "${VEIL_POD_DIR:?VEIL_POD_DIR must be set}"
VEIL_EXAMPLE_DIR="${VEIL_EXAMPLE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
VEIL_EXAMPLE_DIR="$(realpath "$VEIL_EXAMPLE_DIR")"
PORT="${HTTPD_PORT:-80}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "HTTPD_PORT must be a number"
SERVER_NAME="${VEIL_POD_NAME:-httpd-server}"
[[ "$SERVER_NAME" =~ ^[A-Za-z0-9.-]+$ ]] || SERVER_NAME=httpd-server

export DB_HOST="${DB_HOST:-mysql-server}"
export DB_PORT="${DB_PORT:-3306}"
export DB_NAME="${DB_NAME:-pii}"
export DB_USER="${DB_USER:-pii}"
export DB_PASSWORD="${DB_PASSWORD:-}"

APACHE2=/usr/sbin/apache2
[[ -x "$APACHE2" ]] || die "$APACHE2 not found (install apache2)"
MODDIR=/usr/lib/apache2/modules
PHP_MOD=""
for m in "$MODDIR"/libphp8*.so "$MODDIR"/libphp*.so; do
    [[ -f "$m" ]] && { PHP_MOD="$m"; break; }
done
[[ -n "$PHP_MOD" ]] || die "no PHP module under $MODDIR (install libapache2-mod-php)"
DOCROOT="$VEIL_EXAMPLE_DIR/app"
[[ -f "$DOCROOT/index.php" ]] || die "$DOCROOT/index.php not found"

BASE="$(realpath -m "$VEIL_POD_DIR")/httpd"
mkdir -p "$BASE/run" "$BASE/logs"
CONF="$BASE/httpd.conf"

BUILTIN="$("$APACHE2" -l)"
load() { # module name, file: skipped when compiled into the binary
    case "$BUILTIN" in
        *"mod_${2%.so}.c"*) ;;
        *) echo "LoadModule $1 $MODDIR/mod_$2" ;;
    esac
}

{
    cat <<EOF
ServerRoot "$BASE"
ServerName $SERVER_NAME
Listen $PORT
PidFile "$BASE/run/httpd.pid"
DefaultRuntimeDir "$BASE/run"
Mutex file:$BASE/run default
ErrorLog "$BASE/logs/error.log"
LogLevel warn
User www-data
Group www-data
HostnameLookups Off
ServerTokens Prod
ServerSignature Off
Timeout 30
KeepAlive On

EOF
    load mpm_prefork_module mpm_prefork.so
    load authz_core_module  authz_core.so
    load mime_module        mime.so
    load dir_module         dir.so
    load env_module         env.so
    load log_config_module  log_config.so
    echo "LoadModule php_module $PHP_MOD"
    cat <<EOF

StartServers        2
MinSpareServers     1
MaxSpareServers     4
MaxRequestWorkers   16

TypesConfig /etc/mime.types
LogFormat "%h %l %u %t \"%r\" %>s %b" common
CustomLog "$BASE/logs/access.log" common

PassEnv DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD

DocumentRoot "$DOCROOT"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "$DOCROOT">
    Options None
    AllowOverride None
    Require all granted
</Directory>
<Files "db.inc.php">
    Require all denied
</Files>
DirectoryIndex index.php
<FilesMatch "\.php$">
    SetHandler application/x-httpd-php
</FilesMatch>
php_admin_flag display_errors off
php_admin_flag log_errors on
php_admin_value error_log "$BASE/logs/php-error.log"
php_admin_flag expose_php off
EOF
} >"$CONF"

rm -f "$BASE/run/httpd.pid"
"$APACHE2" -f "$CONF" -t >/dev/null 2>"$BASE/configtest.log" \
    || { cat "$BASE/configtest.log" >&2; die "apache config test failed ($CONF)"; }

log "starting apache on port $PORT, DocumentRoot $DOCROOT, DB $DB_USER@$DB_HOST:$DB_PORT/$DB_NAME"
# exec: apache's parent gets SIGTERM directly and stops its workers. On shutdown
# apache signals its whole process group, so it must lead a group of its own:
# when this script does not already, setsid (which does not fork for a non-leader)
# moves it into a new session without changing its pid.
pgid="$(ps -o pgid= -p $$ | tr -d ' ')"
if [[ "$pgid" == "$$" ]]; then
    exec "$APACHE2" -f "$CONF" -DFOREGROUND
else
    exec setsid "$APACHE2" -f "$CONF" -DFOREGROUND
fi
