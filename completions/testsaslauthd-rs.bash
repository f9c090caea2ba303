# bash completion for testsaslauthd-rs; generated from its option table, do not edit.
_testsaslauthd_rs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -u)
            COMPREPLY=($(compgen -u -- "$cur"))
            return ;;
        -p)
            COMPREPLY=()
            return ;;
        -r)
            COMPREPLY=()
            return ;;
        -s)
            COMPREPLY=()
            return ;;
        -f)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        -R)
            COMPREPLY=()
            return ;;
        -a)
            COMPREPLY=()
            return ;;
    esac
    COMPREPLY=($(compgen -W "-u -p -r -s -f -R -a -h --version" -- "$cur"))
}
complete -F _testsaslauthd_rs testsaslauthd-rs
