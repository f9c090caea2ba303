# bash completion for saslauthd-rs; generated from its option table, do not edit.
_saslauthd_rs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -a)
            COMPREPLY=($(compgen -W "sasldb shadow pam ldap sql getpwent kerberos5 rimap" -- "$cur"))
            return ;;
        -O)
            COMPREPLY=()
            return ;;
        -m)
            COMPREPLY=($(compgen -d -- "$cur"))
            return ;;
        -n)
            COMPREPLY=()
            return ;;
        -s)
            COMPREPLY=()
            return ;;
        -t)
            COMPREPLY=()
            return ;;
        -H)
            COMPREPLY=()
            return ;;
        --config)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --sasldb)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --realm)
            COMPREPLY=()
            return ;;
        --socket-mode)
            COMPREPLY=()
            return ;;
        --timeout)
            COMPREPLY=()
            return ;;
        --max-connections)
            COMPREPLY=()
            return ;;
        --shadow-file)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --pam-service)
            COMPREPLY=()
            return ;;
        --rimap-tls)
            COMPREPLY=()
            return ;;
        --rimap-ca)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --threads)
            COMPREPLY=()
            return ;;
        --failure-delay)
            COMPREPLY=()
            return ;;
        --dovecot-socket)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --dovecot-mechanisms)
            COMPREPLY=()
            return ;;
        --dovecot-socket-owner)
            COMPREPLY=($(compgen -u -- "$cur"))
            return ;;
        --dovecot-socket-mode)
            COMPREPLY=()
            return ;;
        --dovecot-max-connections)
            COMPREPLY=()
            return ;;
        --scram-iterations)
            COMPREPLY=()
            return ;;
        --user)
            COMPREPLY=($(compgen -u -- "$cur"))
            return ;;
        --group)
            COMPREPLY=($(compgen -g -- "$cur"))
            return ;;
    esac
    COMPREPLY=($(compgen -W "-a -c -d -f -r -O -l -m -n -s -t -v --version -V -h --help -T -H --config --check-config --sasldb --realm --socket-mode --timeout --max-connections --shadow-file --pam-service --rimap-tls --rimap-ca --threads --failure-delay --dovecot-socket --dovecot-mechanisms --dovecot-socket-owner --dovecot-socket-mode --dovecot-max-connections --dovecot-no-realm-split --dovecot-temp-fail --scram-iterations --user --group" -- "$cur"))
}
complete -F _saslauthd_rs saslauthd-rs
