<?php
// PII demo: a form that stores name, e-mail and address in MariaDB, and the list of stored people.
declare(strict_types=1);
require __DIR__ . '/db.inc.php';

header('Content-Type: text/html; charset=utf-8');

function page(string $title, string $body): void
{
    echo "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>" . h($title) . "</title>\n"
        . "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        . "td,th{border:1px solid #999;padding:.3em .6em}.err{color:#a00}</style></head>\n<body>\n"
        . "<h1>" . h($title) . "</h1>\n" . $body . "</body>\n</html>\n";
}

$message = '';
$status = 200;
try {
    $db = db_connect();

    if ($_SERVER['REQUEST_METHOD'] === 'POST') {
        $name = trim((string)($_POST['name'] ?? ''));
        $email = trim((string)($_POST['email'] ?? ''));
        $address = trim((string)($_POST['address'] ?? ''));
        if ($name === '' || $email === '' || $address === '') {
            $status = 400;
            $message = '<p class="err">Name, e-mail and address are all required.</p>';
        } else {
            $stmt = $db->prepare('INSERT INTO people (name, email, address) VALUES (?, ?, ?)');
            $stmt->bind_param('sss', $name, $email, $address);
            $stmt->execute();
            $message = '<p>Stored person #' . (int)$stmt->insert_id . ': ' . h($name) . '</p>';
            $stmt->close();
        }
    }

    $rows = '';
    $result = $db->query('SELECT id, name, email, address, created FROM people ORDER BY id');
    while ($r = $result->fetch_assoc()) {
        $rows .= '<tr><td>' . (int)$r['id'] . '</td><td>' . h($r['name']) . '</td><td>' . h($r['email'])
            . '</td><td>' . h($r['address']) . '</td><td>' . h($r['created']) . "</td></tr>\n";
    }
    $result->free();
    $db->close();
} catch (mysqli_sql_exception $e) {
    http_response_code(500);
    page('PII demo: database error',
        '<p class="err">Cannot use the database ' . h(db_target()) . ':</p>'
        . '<pre class="err">mysqli error ' . (int)$e->getCode() . ': ' . h($e->getMessage()) . "</pre>\n");
    exit;
}

http_response_code($status);
page('PII demo', $message . <<<HTML
<form method="post" action="">
<p><label>Name <input name="name" maxlength="200" required></label></p>
<p><label>E-mail <input name="email" type="email" maxlength="200" required></label></p>
<p><label>Address <input name="address" maxlength="500" required></label></p>
<p><button type="submit">Store</button></p>
</form>
<h2>Stored people</h2>
<table>
<tr><th>id</th><th>name</th><th>e-mail</th><th>address</th><th>created</th></tr>
$rows</table>

HTML);
