<?php
// Database connection shared by index.php and health.php. Always TCP, never a socket.
declare(strict_types=1);

mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

function h(?string $s): string
{
    return htmlspecialchars((string)$s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

function db_connect(): mysqli
{
    $host = getenv('DB_HOST') ?: 'mysql-server';
    if ($host === 'localhost') {
        $host = '127.0.0.1'; // "localhost" would make mysqli use the Unix socket
    }
    $port = (int)(getenv('DB_PORT') ?: 3306);
    $db = mysqli_init();
    $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, 5);
    $db->real_connect(
        $host,
        getenv('DB_USER') ?: 'pii',
        getenv('DB_PASSWORD') ?: '',
        getenv('DB_NAME') ?: 'pii',
        $port
    );
    $db->set_charset('utf8mb4');
    return $db;
}

function db_target(): string
{
    return (getenv('DB_USER') ?: 'pii') . '@' . (getenv('DB_HOST') ?: 'mysql-server') . ':'
        . (getenv('DB_PORT') ?: '3306') . '/' . (getenv('DB_NAME') ?: 'pii');
}
