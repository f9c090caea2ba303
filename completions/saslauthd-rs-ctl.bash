# bash completion for saslauthd-rs-ctl; generated from its option table, do not edit.
_saslauthd_rs_ctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -m)
            COMPREPLY=($(compgen -d -- "$cur"))
            return ;;
        --service)
            COMPREPLY=()
            return ;;
        --realm)
            COMPREPLY=()
            return ;;
        --count)
            COMPREPLY=()
            return ;;
        -s)
            COMPREPLY=()
            return ;;
        -u)
            COMPREPLY=()
            return ;;
        -p)
            COMPREPLY=()
            return ;;
        -t)
            COMPREPLY=()
            return ;;
    esac
    COMPREPLY=($(compgen -W "-m --service --realm --count -s -u -p -t -l -h --help --version" -- "$cur"))
}
complete -F _saslauthd_rs_ctl saslauthd-rs-ctl
