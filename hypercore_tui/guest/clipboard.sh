#!/bin/sh
# hypercore clip push / pull / watch: the guest side for Linux guests.
# qemu-ga runs as root without the desktop's environment, so this finds the graphical
# session itself: a process whose environment names an X11 or Wayland display whose
# socket exists (ordinary users' processes before root's, the newest first by start
# time; with several users, the user of logind's active seat session first; clipboard
# tools' holder processes last), and runs wl-copy / wl-paste, xclip or xsel as that user
# (the process's uid, gid and groups) with only that session's variables. Without a
# graphical session (or a clipboard tool) the text goes to the fallback file
# FALLBACK_DIR/clipboard, mode 0600 in a 0700 directory, written to a temporary name and
# renamed.
#
# watch starts the clipboard watcher (clipwatch.py, whose text the host sends as stdin:
# nothing here reads stdin, python3 does) for the session found as above: python3 -
# [--replace] PORT UID GID GROUPS KIND with only the session's variables. It opens the
# notification port as root, becomes the session's user, writes "c" to the port on every
# clipboard change (and takes the host's writes of small texts from it) and detaches; see
# its header for what it prints.
#
# The host may name the session it found last time (SESSION...: what this script said in
# its hc-found-* lines). That is only a hint: the process is checked here exactly as a
# scan checks one (same start time, same real uid and gid, not root, its environment
# names a display whose socket exists, the same values as before, and the same set of
# display sockets), and on any difference every process is scanned again.
#
# argv: ACTION FALLBACK_DIR [--replace] [PID START UID GID KIND DISPLAY XAUTHORITY
#       WAYLAND_DISPLAY XDG_RUNTIME_DIR SOCKETS]
#   ACTION        push (the text is on stdin), pull or watch (the watcher's program is on
#                 stdin); pull-image (after a pull found no text: the image/png the owner
#                 offers, "hc-kind=image/png" and its bytes on stdout, or "hc-kind=other
#                 TYPE" for another image type, or "hc-empty"); push-image (PNG on stdin;
#                 exit 23: no graphical session or no tool that takes an image)
#                 pull-files PLEN ENTRY CAP HELD (after a copy the watcher said offers
#                 files: clipwatch.py pull-files as the session's user copies them into
#                 /shared/.hypercore-clip/ENTRY; "hc-kind=files" and the top-level names
#                 NUL-separated on stdout; "hc-empty" without a file list); push-files
#                 PLEN (the file list offered by clipwatch.py own); for both, stdin starts
#                 with clipwatch.py's text, PLEN bytes (push-files: the list after it)
#   FALLBACK_DIR  the root-only directory of the fallback file
#   --replace     watch only: a watcher already running is stopped and replaced
#   PID...        the session found last time (see above)
# stdin: push: the text, exactly; watch: the text of clipwatch.py
# stdout: pull: the text, exactly
# stderr: status lines for the host ("hc-method=TOOL|file", "hc-session=KIND DISPLAY
#   uid=UID", "hc-lookup=cached|scan|stale" (stale: the hint failed its checks),
#   "hc-found-KEY=VALUE" for the session a scan found when the host may name it next
#   time, "hc-note=TEXT", "hc-empty"; watch: "hc-watch=x11|wayland|running|none|
#   unsupported", "hc-watch-pid=PID") and error messages
# exit status: 0 ok; 20 the clipboard tool failed; 22 the fallback file cannot be
#   written; 2 unknown ACTION; pull: the tool's status (an empty clipboard is an error
#   message, recognised by the host); watch: 3 no graphical session (hc-watch=none: the
#   host watches the fallback file) or no watcher possible here (hc-watch=unsupported and
#   a line saying why), 1 the watcher failed (a line saying why)
set -u
action=$1 fbdir=$2
shift 2
replace=''
if [ "$action" = watch ] && [ "${1-}" = --replace ]; then replace=--replace; shift; fi
# pull-files / push-files: the length of clipwatch.py at the start of stdin, then (pull)
# the entry's name, the size cap and the entry the host last offered here ("-": none).
plen='' entry='' cap='' held=''
case $action in
    pull-files) [ $# -ge 4 ] || { printf 'usage\n' >&2; exit 2; }
        plen=$1 entry=$2 cap=$3 held=$4; shift 4 ;;
    push-files) [ $# -ge 1 ] || { printf 'usage\n' >&2; exit 2; }
        plen=$1; shift ;;
esac
fbfile=$fbdir/clipboard
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { printf '%s\n' "$*" >&2; }
private_dir() {  # the 0700 root-only directory of the fallback file
    umask 077
    if [ -L "$fbdir" ]; then
        say "$fbdir is a symbolic link; refusing to write through it"; return 1
    fi
    # shellcheck disable=SC2174 # the parents (/var/lib) are the system's, only the last is ours
    [ -d "$fbdir" ] || mkdir -p -m 700 "$fbdir" || { say "cannot create $fbdir"; return 1; }
}
fallback() {  # the fallback file: 0600, written to a temporary name and renamed
    if [ "$action" = watch ]; then say "hc-watch=none"; exit 3; fi
    if [ "$action" = pull-image ] || [ "$action" = pull-files ]; then say "hc-empty"; exit 0; fi
    if [ "$action" = push-files ]; then
        say "no graphical session in the guest: files have no clipboard to go to"; exit 23
    fi
    if [ "$action" = push-image ]; then
        say "no graphical session in the guest: an image has no clipboard to go to"; exit 23
    fi
    if [ "$action" = push ]; then
        private_dir || exit 22
        tmp=$fbdir/.clipboard.tmp
        cat > "$tmp" || { say "cannot write $tmp"; exit 22; }
        say "hc-method=file"
        exec mv -f "$tmp" "$fbfile"
    fi
    say "hc-method=file"
    if [ -f "$fbfile" ]; then exec cat "$fbfile"; fi
    say "hc-empty"
    exit 0
}
# The display sockets (also the hint's check that no session came or went). None: no
# graphical session. The shell parses a script as it runs it, so this common case never
# reads the rest (it is slow under emulation).
nl='
'
socks=''
for s in /tmp/.X11-unix/X* /run/user/*/wayland-* /tmp/*/wayland-*; do
    [ -S "$s" ] || continue
    case $s in *"$nl"*) s='?' ;; esac
    socks="$socks $s"
done
[ -n "$socks" ] || fallback

# Under emulation every program started costs 30-60 ms and every byte `read` reads a
# system call: what follows starts as few as it can (tr for the environment of the one
# process it checks, setpriv and the tool; a scan adds grep, awk and sometimes sort) and
# reads /proc files only as far as it needs.
have() { command -v "$1" >/dev/null 2>&1; }
s_pid='' s_start='' s_uid='' s_gid='' s_groups='' s_disp='' s_xauth='' s_wl='' s_xrd=''
s_kind='' s_home=''
proc_ids() {  # $1 = /proc/PID: sets uid gid (real ids) and groups (comma-separated)
    uid='' gid='' groups=''
    while read -r key a rest; do
        case $key in
            Uid:) uid=$a ;;
            Gid:) gid=$a ;;
            Groups:)
                for g in $a $rest; do groups=${groups:+$groups,}$g; done
                break ;;
        esac
    done < "$1/status"
    case $uid$gid$groups in *[!0-9,]*) return 1 ;; esac
    [ -n "$uid" ] && [ -n "$gid" ]
}
proc_start() {  # $1 = /proc/PID: sets start (field 22 of stat) and comm
    start='' comm=''
    IFS= read -r line < "$1/stat" || return 1
    rest=${line##*") "}
    [ "$rest" != "$line" ] || return 1  # the name held a new line
    comm=${line#*\(}
    comm=${comm%") "*}
    set -f
    # shellcheck disable=SC2086 # the fields after the name: numbers and a state letter
    set -- $rest
    set +f
    [ $# -ge 20 ] || return 1
    shift 19
    start=$1
}
is_tool() {  # $1 = a process name: a clipboard tool's holder, never the session itself
    case $1 in xclip|xsel|wl-copy|wl-paste) return 0 ;; esac
    return 1
}
consider() {  # $1 = /proc/PID/environ; sets s_* and succeeds when its display is usable
    d='' xa='' wl='' xrd='' home=''
    # (one string split at new lines: no pipe, no byte-by-byte read)
    env=$(tr '\0' '\n' < "$1" 2>/dev/null)
    set -f
    IFS=$nl
    for line in $env; do
        case $line in
            DISPLAY=*) [ -n "$d" ] || d=${line#DISPLAY=} ;;
            XAUTHORITY=*) [ -n "$xa" ] || xa=${line#XAUTHORITY=} ;;
            WAYLAND_DISPLAY=*) [ -n "$wl" ] || wl=${line#WAYLAND_DISPLAY=} ;;
            XDG_RUNTIME_DIR=*) [ -n "$xrd" ] || xrd=${line#XDG_RUNTIME_DIR=} ;;
            HOME=*) [ -n "$home" ] || home=${line#HOME=} ;;
        esac
    done
    unset IFS
    set +f
    case $xa in /*) ;; *) xa= ;; esac
    case $xrd in /*) ;; *) xrd= ;; esac
    case $home in /*) ;; *) home= ;; esac
    local_x=''
    case $d in
        :[0-9]*)
            n=${d#:}; n=${n%%.*}
            case $n in *[!0-9]*) ;; *) [ -S "/tmp/.X11-unix/X$n" ] && local_x=1 ;; esac ;;
    esac
    s_uid=$uid s_gid=$gid s_groups=$groups s_home=$home
    if [ -n "$wl" ] && [ -n "$xrd" ]; then
        case $wl in /*) sock=$wl ;; */*) sock= ;; *) sock=$xrd/$wl ;; esac
        if [ -n "$sock" ] && [ -S "$sock" ]; then
            s_kind=wayland s_wl=$wl s_xrd=$xrd s_disp='' s_xauth=''
            [ -n "$local_x" ] && s_disp=$d s_xauth=$xa
            return 0
        fi
    fi
    [ -n "$local_x" ] || return 1
    s_kind=x11 s_disp=$d s_xauth=$xa s_wl='' s_xrd=$xrd
    return 0
}
# The session the host names (argv after FALLBACK_DIR): used only if it passes the
# checks a scan makes, and unchanged.
hinted() {
    [ $# -eq 10 ] || return 1
    for v in "$1" "$2" "$3" "$4"; do
        case $v in ''|*[!0-9]*) return 1 ;; esac
    done
    [ "$socks" = "${10}" ] || return 1
    proc_start "/proc/$1" 2>/dev/null && [ "$start" = "$2" ] || return 1
    ! is_tool "$comm" || return 1
    proc_ids "/proc/$1" 2>/dev/null || return 1
    if [ "$uid" = 0 ] || [ "$uid" != "$3" ] || [ "$gid" != "$4" ]; then return 1; fi
    consider "/proc/$1/environ" || return 1
    [ "$s_kind" = "$5" ] && [ "$s_disp" = "$6" ] && [ "$s_xauth" = "$7" ] \
        && [ "$s_wl" = "$8" ] && [ "$s_xrd" = "$9" ] || return 1
    s_pid=$1 s_start=$2
}
# One line per process with display variables: "START PID UID GID TOOL GROUPS" (real
# ids; TOOL 1 for a clipboard tool's holder; GROUPS comma-separated).
# shellcheck disable=SC2016 # awk's own $ fields
ids_awk='BEGIN {
    for (i = 1; i < ARGC; i++) {
        d = ARGV[i]; sub(/\/environ$/, "", d)
        s = ""
        while ((getline l < (d "/stat")) > 0) s = s l "\n"
        close(d "/stat")
        c = s
        if (!sub(/^.*\) /, "", s)) continue
        sub(/^[^(]*\(/, "", c); sub(/\) [^)]*$/, "", c)
        if (split(s, f, " ") < 20) continue
        u = ""; g = ""; grp = ""
        while ((getline l < (d "/status")) > 0) {
            n = split(l, a)
            if (a[1] == "Uid:" && u == "") u = a[2]
            else if (a[1] == "Gid:" && g == "") g = a[2]
            else if (a[1] == "Groups:") {
                for (j = 2; j <= n; j++) grp = grp (grp == "" ? "" : ",") a[j]
                break
            }
        }
        close(d "/status")
        if (u == "" || g == "") continue
        t = (c == "xclip" || c == "xsel" || c == "wl-copy" || c == "wl-paste") ? 1 : 0
        print f[20], substr(d, 7), u, g, t, grp
    }
}'
cacheable=''
candidate() {  # START PID UID GID GROUPS: consider that process
    uid=$3 gid=$4 groups=${5-}
    consider "/proc/$2/environ" || return 1
    s_start=$1 s_pid=$2
}
find_session() {
    # (grep's status is 2 when a process vanished while it ran: only the list counts)
    cands=$(grep -l -s -z -E '^(DISPLAY|WAYLAND_DISPLAY)=' /proc/[0-9]*/environ)
    [ -n "$cands" ] || return 1
    # shellcheck disable=SC2086 # one argument per file: the names are /proc/PID/environ
    cands=$(awk "$ids_awk" $cands 2>/dev/null)
    # Several users with display variables: any of them could fake a session, so prefer
    # the user of the seat's active session when logind can tell (and leave the host
    # nothing to remember: the next push asks again).
    users='' want=''
    while read -r st p u g t grp; do
        if [ -z "$p" ] || [ "$u" = 0 ] || [ "$t" = 1 ]; then continue; fi
        case " $users " in *" $u "*) ;; *) users="$users $u" ;; esac
    done <<EOT
$cands
EOT
    case $users in
        *" "*" "*)
            if have loginctl; then
                active=$(loginctl show-seat seat0 -p ActiveSession --value 2>/dev/null)
                [ -n "$active" ] && want=$(loginctl show-session "$active" -p User --value \
                    2>/dev/null)
            fi ;;
        " "*) cacheable=1 ;;
    esac
    # The newest process first (by start time, then pid): usually it is the session.
    best='' bst=-1 bp=0
    while read -r st p u g t grp; do
        if [ -z "$p" ] || [ "$u" = 0 ] || [ "$t" = 1 ]; then continue; fi
        [ -n "$want" ] && [ "$u" != "$want" ] && continue
        if [ "$st" -gt "$bst" ] || { [ "$st" -eq "$bst" ] && [ "$p" -gt "$bp" ]; }; then
            bst=$st bp=$p best="$st $p $u $g $grp"
        fi
    done <<EOT
$cands
EOT
    if [ -n "$best" ]; then
        # shellcheck disable=SC2086 # numbers
        candidate $best && return 0
    fi
    # Else every process, newest first: the active user's, other users', clipboard
    # tools' holders (not remembered: they end), root's (never remembered).
    cands=$(printf '%s\n' "$cands" | sort -k1,1nr -k2,2nr)
    for tier in want user tool root; do
        [ "$tier" = want ] && [ -z "$want" ] && continue
        while read -r st p u g t grp; do
            [ -n "$p" ] || continue
            case $tier in
                want) if [ "$u" != "$want" ] || [ "$t" = 1 ]; then continue; fi ;;
                user) if [ "$u" = 0 ] || [ "$u" = "$want" ] || [ "$t" = 1 ]; then continue; fi ;;
                tool) if [ "$u" = 0 ] || [ "$t" = 0 ]; then continue; fi ;;
                root) [ "$u" = 0 ] || continue ;;
            esac
            if candidate "$st" "$p" "$u" "$g" "$grp"; then
                case $tier in tool|root) cacheable='' ;; esac
                return 0
            fi
        done <<EOT
$cands
EOT
    done
    return 1
}
lookup=scan
session() {  # "$@": the host's hint; sets s_* and lookup
    if [ $# -gt 0 ]; then
        if hinted "$@"; then lookup=cached; return 0; fi
        lookup=stale
    fi
    find_session
}

user_name=''
lookup_user() {  # the session user's name, and home when its environment names none
    while IFS=: read -r n _ u _ _ h _; do
        if [ "$u" = "$s_uid" ]; then
            user_name=$n
            [ -n "$s_home" ] || s_home=$h
            return 0
        fi
    done < /etc/passwd
    return 1
}
session_env() {  # the tool gets PATH (from the agent's env) and the session's variables only
    [ -n "$s_home" ] || lookup_user
    [ -n "$s_home" ] && export HOME="$s_home"
    [ -n "$s_disp" ] && export DISPLAY="$s_disp"
    [ -n "$s_xauth" ] && export XAUTHORITY="$s_xauth"
    [ -n "$s_wl" ] && export WAYLAND_DISPLAY="$s_wl"
    [ -n "$s_xrd" ] && export XDG_RUNTIME_DIR="$s_xrd"
    :
}
run=''  # "exec": as_user replaces this shell
as_user() {  # as_user CMD [ARG]...: CMD as the session's user, with its groups
    self=''
    while read -r key a _; do
        case $key in Uid:) self=$a; break ;; esac
    done < /proc/self/status
    if [ "$s_uid" = "$self" ]; then $run "$@"; return; fi
    # util-linux setpriv (busybox's, a symbolic link, cannot change ids)
    for sp in /usr/bin/setpriv /bin/setpriv /usr/sbin/setpriv /sbin/setpriv; do
        if [ ! -x "$sp" ] || [ -L "$sp" ]; then continue; fi
        if [ -n "$s_groups" ]; then
            $run "$sp" --reuid="$s_uid" --regid="$s_gid" --groups="$s_groups" -- "$@"
        else
            $run "$sp" --reuid="$s_uid" --regid="$s_gid" --clear-groups -- "$@"
        fi
        return
    done
    [ -n "$user_name" ] || lookup_user
    if [ -n "$user_name" ] && have runuser; then
        $run runuser -u "$user_name" -- "$@"; return
    fi
    if [ -n "$user_name" ] && have su; then
        # shellcheck disable=SC2016 # expanded by the user's shell: it runs our argv as is
        $run su -s /bin/sh "$user_name" -c 'exec "$0" "$@"' "$@"; return
    fi
    # No way to change ids: root can still reach the display with the session's cookie.
    $run "$@"
}
tool=''
pick_tool() {
    if [ "$s_kind" = wayland ] && have wl-copy && have wl-paste; then tool=wl; return 0; fi
    if [ -n "$s_disp" ] && have xclip; then tool=xclip; return 0; fi
    if [ -n "$s_disp" ] && have xsel; then tool=xsel; return 0; fi
    return 1
}
notool="the guest has a graphical session but no clipboard tool: install xclip (X11) \
or wl-clipboard (Wayland)"
describe() {
    say "hc-session=$s_kind ${s_wl:-$s_disp} uid=$s_uid"
    say "hc-lookup=$lookup"
    if [ "$lookup" = cached ] || [ -z "$cacheable" ]; then return 0; fi
    # What the host passes back next time (one value a line: none holds a new line).
    printf 'hc-found-%s\n' "pid=$s_pid" "start=$s_start" "uid=$s_uid" "gid=$s_gid" \
        "kind=$s_kind" "display=$s_disp" "xauthority=$s_xauth" "wayland=$s_wl" \
        "runtime=$s_xrd" "sockets=$socks" >&2
}
put() {  # put TYPE ('' = text): stdin onto the session's clipboard, then exit
    # The tool forks a holder that keeps its stdout/stderr open: they must not be the
    # agent's pipes. Its error message goes to a file in the private directory.
    err=/dev/null
    private_dir 2>/dev/null && err=$fbdir/.tool-error
    session_env
    case $tool${1:+-typed} in
        wl) as_user wl-copy >/dev/null 2>"$err" ;;
        wl-typed) as_user wl-copy --type "$1" >/dev/null 2>"$err" ;;
        xclip) as_user xclip -selection clipboard -i >/dev/null 2>"$err" ;;
        xclip-typed) as_user xclip -selection clipboard -t "$1" -i >/dev/null 2>"$err" ;;
        *) as_user xsel --clipboard --input >/dev/null 2>"$err" ;;
    esac
    rc=$?
    if [ "$rc" = 0 ]; then say "hc-method=$tool"; exit 0; fi
    msg=''
    [ "$err" = /dev/null ] || IFS= read -r msg < "$err"
    say "$tool failed (exit $rc): $msg"
    exit 20
}
if [ "$action" = push ]; then
    if session "$@"; then
        describe
        if pick_tool; then put ''; fi
        say "hc-note=$notool"
    fi
    fallback
elif [ "$action" = pull ]; then
    if session "$@"; then
        describe
        if pick_tool; then
            say "hc-method=$tool"
            session_env
            # These do not fork: their stderr is the agent's (an empty clipboard is an error
            # message there, recognised by the host).
            run='exec'
            case $tool in
                wl) as_user wl-paste --no-newline ;;
                xclip) as_user xclip -selection clipboard -o ;;
                xsel) as_user xsel --clipboard --output ;;
            esac
            exit $?
        fi
        say "hc-note=$notool"
    fi
    fallback
elif [ "$action" = pull-image ]; then
    # After a pull found no text: an image the owner offers as image/png (other image
    # types are named, not converted).
    if session "$@"; then
        describe
        if pick_tool; then
            say "hc-method=$tool"
            session_env
            case $tool in
                wl) types=$(as_user wl-paste --list-types 2>/dev/null) ;;
                xclip) types=$(as_user xclip -selection clipboard -o -t TARGETS 2>/dev/null) ;;
                *) types='' ;;
            esac
            other=''
            for t in $types; do
                case $t in
                    image/png) say "hc-kind=image/png"; run='exec'
                        case $tool in
                            wl) as_user wl-paste --type image/png ;;
                            *) as_user xclip -selection clipboard -o -t image/png ;;
                        esac
                        exit $? ;;
                    image/*) [ -n "$other" ] || other=$t ;;
                esac
            done
            if [ -n "$other" ]; then say "hc-kind=other $other"; exit 0; fi
        fi
    fi
    say "hc-empty"
    exit 0
elif [ "$action" = push-image ]; then
    if session "$@"; then
        describe
        if pick_tool && [ "$tool" != xsel ]; then put image/png; fi
        say "no clipboard tool in the guest's session takes an image (xclip or wl-clipboard)"
        exit 23
    fi
    say "no graphical session in the guest: an image has no clipboard to go to"
    exit 23
elif [ "$action" = pull-files ] || [ "$action" = push-files ]; then
    # Files through the shared folder: clipwatch.py (at the start of stdin, plen bytes)
    # as the session's user; push-files: the gnome-copied-files list after it.
    session "$@" || fallback
    describe
    if ! pick_tool || [ "$tool" = xsel ]; then
        if [ "$action" = pull-files ]; then say "hc-empty"; exit 0; fi
        say "no clipboard tool in the guest's session offers files (xclip or wl-clipboard)"
        exit 23
    fi
    if ! have python3; then
        if [ "$action" = pull-files ]; then say "hc-empty"; exit 0; fi
        say "no python3 in the guest: files cannot be offered there"; exit 23
    fi
    session_env
    # shellcheck disable=SC2016 # python: reads its program (plen bytes) and runs it
    loader='import sys;n=int(sys.argv.pop(1));s=sys.stdin.buffer.read(n);exec(compile(s,"clipwatch.py","exec"),{"__name__":"__main__"})'
    run='exec'
    if [ "$action" = pull-files ]; then
        as_user python3 -c "$loader" "$plen" pull-files "$tool" "$entry" "$cap" "$held"
    fi
    as_user python3 -c "$loader" "$plen" own "$tool"
elif [ "$action" = watch ]; then
    session "$@" || fallback
    describe
    if ! have python3; then
        say "hc-watch=unsupported"; say "no python3 in the guest"; exit 3
    fi
    session_env
    set -- /dev/virtio-ports/org.hypercore.clipboard.0 "$s_uid" "$s_gid" "$s_groups" "$s_kind"
    [ -z "$replace" ] || set -- "$replace" "$@"
    exec python3 - "$@"
fi
say "unknown action"
exit 2
