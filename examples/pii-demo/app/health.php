<?php
// Health check: 200 "ok" when the database answers SELECT 1 over TCP.
declare(strict_types=1);
require __DIR__ . '/db.inc.php';

header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
try {
    $db = db_connect();
    $db->query('SELECT 1')->free();
    $db->close();
    echo "ok\n";
} catch (mysqli_sql_exception $e) {
    http_response_code(503);
    echo 'database unreachable (' . db_target() . '): ' . $e->getMessage() . "\n";
}
