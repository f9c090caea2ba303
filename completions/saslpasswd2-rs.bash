# bash completion for saslpasswd2-rs; generated from its option table, do not edit.
_saslpasswd2_rs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -f)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        -a)
            COMPREPLY=()
            return ;;
        -u)
            COMPREPLY=()
            return ;;
        --format)
            COMPREPLY=($(compgen -W "lmdb bdb gdbm" -- "$cur"))
            return ;;
        --config)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
    esac
    COMPREPLY=($(compgen -W "-p -c -d -n -f -a -u -v --version -h --format --config" -- "$cur"))
}
complete -F _saslpasswd2_rs saslpasswd2-rs
