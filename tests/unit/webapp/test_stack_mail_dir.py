"""The stack's Maildir outside ``var_dir`` (the benchmarks keep it on tmpfs)."""

from webapp.stack import Stack


def test_a_mail_dir_outside_var_dir_is_the_smtp_servers_and_a_fresh_prepare_empties_it(tmp_path):
    var_dir, mail_dir = tmp_path / "var", tmp_path / "elsewhere" / "mail"
    stack = Stack(var_dir=var_dir, mail_dir=mail_dir)

    stack.prepare(fresh=True)
    (mail_dir / "new" / "old-message").write_bytes(b"Subject: from a run before\n\n")
    stack.prepare(fresh=True)

    assert stack.env["MAIL_DIR"] == str(mail_dir) and stack.mail_dir == mail_dir
    assert sorted(p.name for p in mail_dir.iterdir()) == ["cur", "new", "tmp"]
    assert list((mail_dir / "new").iterdir()) == []
    assert not (var_dir / "mail").exists() and (var_dir / "redis").is_dir()


def test_without_a_mail_dir_the_maildir_is_in_var_dir(tmp_path):
    stack = Stack(var_dir=tmp_path)
    stack.prepare(fresh=False)
    assert stack.mail_dir == tmp_path / "mail" and stack.env["MAIL_DIR"] == str(tmp_path / "mail")
    assert (tmp_path / "mail" / "new").is_dir()
