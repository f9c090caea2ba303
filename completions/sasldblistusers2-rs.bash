# bash completion for sasldblistusers2-rs; generated from its option table, do not edit.
_sasldblistusers2_rs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -f)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
    esac
    COMPREPLY=($(compgen -W "-f -v --version -h --json" -- "$cur"))
}
complete -F _sasldblistusers2_rs sasldblistusers2-rs
