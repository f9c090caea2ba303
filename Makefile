# make && make install [DESTDIR=/tmp/stage] [PREFIX=/usr] [SYSCONFDIR=/etc]
#
# Puts the programs, the systemd units, tmpfiles.d and sysusers.d entries, the manual pages,
# the bash, zsh and fish completions, the Cyrus compatibility wrapper, the fail2ban filter
# and the example configuration where Debian and Fedora keep them. An existing
# $(SYSCONFDIR)/saslauthd-rs.toml is never overwritten. Nothing is enabled or started.
# `make uninstall` removes what `make install` put (but the configuration file).

PREFIX ?= /usr
SYSCONFDIR ?= /etc
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/saslauthd-rs
UNITDIR ?= $(LIBDIR)/systemd/system
TMPFILESDIR ?= $(LIBDIR)/tmpfiles.d
SYSUSERSDIR ?= $(LIBDIR)/sysusers.d
BASHDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHDIR ?= $(PREFIX)/share/fish/vendor_completions.d
CARGO ?= cargo
TARGET ?= target/release

PROGRAMS = saslauthd-rs saslpasswd2-rs sasldblistusers2-rs testsaslauthd-rs sasldb-convert-rs saslauthd-rs-ctl
TOOLS = saslpasswd2-rs sasldblistusers2-rs testsaslauthd-rs
UNITS = saslauthd-rs.service saslauthd-rs.socket saslauthd-rs-dovecot.socket
PAGES8 = saslauthd-rs.8 saslauthd-rs-ctl.8 saslpasswd2-rs.8 sasldblistusers2-rs.8 testsaslauthd-rs.8
PAGES5 = saslauthd-rs.toml.5

.PHONY: all install uninstall

all:
	$(CARGO) build --release --locked --bins

install: all
	install -d $(DESTDIR)$(SBINDIR)
	for p in $(PROGRAMS); do install -m 0755 $(TARGET)/$$p $(DESTDIR)$(SBINDIR)/$$p; done
	install -D -m 0755 saslauthd-compat/saslauthd.wrapper $(DESTDIR)$(LIBDIR)/saslauthd-rs/saslauthd.wrapper
	install -d $(DESTDIR)$(UNITDIR)
	for u in $(UNITS); do install -m 0644 systemd/$$u $(DESTDIR)$(UNITDIR)/$$u; done
	install -D -m 0644 systemd/saslauthd-rs.tmpfiles $(DESTDIR)$(TMPFILESDIR)/saslauthd-rs.conf
	install -D -m 0644 systemd/saslauthd-rs.sysusers $(DESTDIR)$(SYSUSERSDIR)/saslauthd-rs.conf
	install -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	for m in $(PAGES8); do install -m 0644 man/$$m $(DESTDIR)$(MANDIR)/man8/$$m; done
	for m in $(PAGES5); do install -m 0644 man/$$m $(DESTDIR)$(MANDIR)/man5/$$m; done
	install -d $(DESTDIR)$(BASHDIR) $(DESTDIR)$(ZSHDIR) $(DESTDIR)$(FISHDIR)
	for c in saslauthd-rs saslauthd-rs-ctl $(TOOLS); do \
	    install -m 0644 completions/$$c.bash $(DESTDIR)$(BASHDIR)/$$c; \
	    install -m 0644 completions/_$$c $(DESTDIR)$(ZSHDIR)/_$$c; \
	    install -m 0644 completions/$$c.fish $(DESTDIR)$(FISHDIR)/$$c.fish; \
	done
	install -d $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR)/fail2ban/filter.d $(DESTDIR)$(DOCDIR)/fail2ban/jail.d
	install -m 0644 README.md SECURITY.md BENCHMARKS.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 saslauthd-compat/README.md $(DESTDIR)$(DOCDIR)/COMPATIBILITY.md
	install -m 0644 etc/saslauthd-rs.toml $(DESTDIR)$(DOCDIR)/examples/saslauthd-rs.toml
	install -m 0644 systemd/saslauthd.service $(DESTDIR)$(DOCDIR)/examples/saslauthd.service
	install -m 0644 saslauthd-compat/fail2ban/filter.d/*.conf $(DESTDIR)$(DOCDIR)/fail2ban/filter.d/
	install -m 0644 saslauthd-compat/fail2ban/jail.d/*.conf $(DESTDIR)$(DOCDIR)/fail2ban/jail.d/
	install -d $(DESTDIR)$(SYSCONFDIR)
	[ -e $(DESTDIR)$(SYSCONFDIR)/saslauthd-rs.toml ] || \
	    install -m 0644 etc/saslauthd-rs.toml $(DESTDIR)$(SYSCONFDIR)/saslauthd-rs.toml

uninstall:
	for p in $(PROGRAMS); do rm -f $(DESTDIR)$(SBINDIR)/$$p; done
	rm -rf $(DESTDIR)$(LIBDIR)/saslauthd-rs $(DESTDIR)$(DOCDIR)
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	rm -f $(DESTDIR)$(TMPFILESDIR)/saslauthd-rs.conf $(DESTDIR)$(SYSUSERSDIR)/saslauthd-rs.conf
	for m in $(PAGES8); do rm -f $(DESTDIR)$(MANDIR)/man8/$$m; done
	for m in $(PAGES5); do rm -f $(DESTDIR)$(MANDIR)/man5/$$m; done
	for c in saslauthd-rs saslauthd-rs-ctl $(TOOLS); do \
	    rm -f $(DESTDIR)$(BASHDIR)/$$c $(DESTDIR)$(ZSHDIR)/_$$c $(DESTDIR)$(FISHDIR)/$$c.fish; \
	done
