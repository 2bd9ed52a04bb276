# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_dnsha_global_optspecs
    string join \n h/help V/version
end

function __fish_dnsha_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_dnsha_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_dnsha_using_subcommand
    set -l cmd (__fish_dnsha_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c dnsha -n "__fish_dnsha_needs_command" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_needs_command" -s V -l version -d 'Print version'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "run" -d 'Run the balancer in the foreground (logs to stderr)'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "check" -d 'Check a configuration file and exit (0 when valid)'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "demo" -d 'Run the balancer on 127.0.0.1:5353 in front of two built-in demo backends serving example.test'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "status" -d 'Show pools and backends of a running dnsha (like `ipvsadm -Ln`)'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "cache" -d 'Work on the packet caches of a running dnsha'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "hash-password" -d 'Print an Argon2id hash (PHC format) of a password read from the standard input, for `[admin] users = ["NAME:HASH"]`'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "backend" -d 'Drain a backend of a running dnsha, put it back, or probe it now (like `ipvsadm -e -w 0` or HAProxy\'s `disable server`)'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "import" -d 'Translate an existing stack\'s configuration (keepalived, nginx `stream`, HAProxy, nftables) into one dnsha configuration'
complete -c dnsha -n "__fish_dnsha_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dnsha -n "__fish_dnsha_using_subcommand run" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand run" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_using_subcommand check" -s c -l config -d 'Configuration file (TOML)' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand check" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_using_subcommand demo" -l listen -d 'Where the balancer listens (UDP and TCP)' -r
complete -c dnsha -n "__fish_dnsha_using_subcommand demo" -l admin -d 'Admin HTTP endpoint of the demo' -r
complete -c dnsha -n "__fish_dnsha_using_subcommand demo" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_using_subcommand status" -l admin -d 'Admin endpoint of the running daemon: ADDR:PORT, or https://HOST:PORT when it has a certificate (checked against the CA file in DNSHA_ADMIN_CA, else the system\'s roots)' -r
complete -c dnsha -n "__fish_dnsha_using_subcommand status" -l json -d 'Print the raw JSON of `/status`'
complete -c dnsha -n "__fish_dnsha_using_subcommand status" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and not __fish_seen_subcommand_from purge help" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and not __fish_seen_subcommand_from purge help" -f -a "purge" -d 'Remove answers from a pool\'s cache: all of them, a name\'s, or a name\'s of one type (`POST /cache/purge` on the admin endpoint)'
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and not __fish_seen_subcommand_from purge help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and __fish_seen_subcommand_from purge" -l admin -d 'Admin endpoint of the running daemon: ADDR:PORT, or https://HOST:PORT when it has a certificate (checked against the CA file in DNSHA_ADMIN_CA, else the system\'s roots)' -r
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and __fish_seen_subcommand_from purge" -l suffix -d 'Every name under NAME too (NAME itself included)'
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and __fish_seen_subcommand_from purge" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "purge" -d 'Remove answers from a pool\'s cache: all of them, a name\'s, or a name\'s of one type (`POST /cache/purge` on the admin endpoint)'
complete -c dnsha -n "__fish_dnsha_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dnsha -n "__fish_dnsha_using_subcommand hash-password" -s h -l help -d 'Print help'
complete -c dnsha -n "__fish_dnsha_using_subcommand backend" -l admin -d 'Admin endpoint of the running daemon: ADDR:PORT, or https://HOST:PORT when it has a certificate (checked against the CA file in DNSHA_ADMIN_CA, else the system\'s roots)' -r
complete -c dnsha -n "__fish_dnsha_using_subcommand backend" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dnsha -n "__fish_dnsha_using_subcommand import" -l keepalived -d 'keepalived.conf: vrrp_instance into [[vrrp]], virtual_server into listeners on the VIP and pools with health checks. Repeatable' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand import" -l nginx -d 'nginx.conf, or a file of `stream` directives: upstream into pools, server into listeners. Repeatable' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand import" -l haproxy -d 'haproxy.cfg: frontend, backend and listen into listeners and pools, `listen stats` into [admin]. Repeatable' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand import" -l nftables -d 'An nftables ruleset: `numgen` DNAT rules into pools and listeners. Repeatable' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand import" -s o -l output -d 'Write the configuration to FILE (replaced whole) instead of standard output' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand import" -l log-dir -d 'Directory the imported access logs are written to' -r -F
complete -c dnsha -n "__fish_dnsha_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "run" -d 'Run the balancer in the foreground (logs to stderr)'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "check" -d 'Check a configuration file and exit (0 when valid)'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "demo" -d 'Run the balancer on 127.0.0.1:5353 in front of two built-in demo backends serving example.test'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "status" -d 'Show pools and backends of a running dnsha (like `ipvsadm -Ln`)'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "cache" -d 'Work on the packet caches of a running dnsha'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "hash-password" -d 'Print an Argon2id hash (PHC format) of a password read from the standard input, for `[admin] users = ["NAME:HASH"]`'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "backend" -d 'Drain a backend of a running dnsha, put it back, or probe it now (like `ipvsadm -e -w 0` or HAProxy\'s `disable server`)'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "import" -d 'Translate an existing stack\'s configuration (keepalived, nginx `stream`, HAProxy, nftables) into one dnsha configuration'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and not __fish_seen_subcommand_from run check demo status cache hash-password backend import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dnsha -n "__fish_dnsha_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "purge" -d 'Remove answers from a pool\'s cache: all of them, a name\'s, or a name\'s of one type (`POST /cache/purge` on the admin endpoint)'
