#!/bin/sh
# hypercore clip push / pull: the guest side for Linux guests.
# qemu-ga runs as root without the desktop's environment, so this finds the graphical
# session itself: a process whose environment names an X11 or Wayland display whose
# socket exists (ordinary users' processes before root's, newest first; with several
# users, the user of logind's active seat session first), and runs wl-copy / wl-paste,
# xclip or xsel as that user with only that session's variables. Without a graphical
# session (or a clipboard tool) the text goes to the fallback file FALLBACK_DIR/clipboard,
# mode 0600 in a 0700 directory, written to a temporary name and renamed.
#
# argv: ACTION FALLBACK_DIR
#   ACTION        push (the text is on stdin) or pull
#   FALLBACK_DIR  the root-only directory of the fallback file
# stdin: push: the text, exactly
# stdout: pull: the text, exactly
# stderr: status lines for the host ("hc-method=TOOL|file", "hc-session=KIND DISPLAY
#   uid=UID", "hc-note=TEXT", "hc-empty") and error messages
# exit status: 0 ok; 20 the clipboard tool failed; 22 the fallback file cannot be
#   written; 2 unknown ACTION; pull: the tool's status (an empty clipboard is an error
#   message, recognised by the host)
set -u
action=$1 fbdir=$2
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
# No X11 or Wayland socket at all: no graphical session. The shell parses a script as it
# runs it, so this common case never reads the rest (it is slow under emulation).
for s in /tmp/.X11-unix/X* /run/user/*/wayland-* /tmp/*/wayland-*; do
    [ -S "$s" ] && break
    s=''
done
[ -n "$s" ] || fallback

have() { command -v "$1" >/dev/null 2>&1; }
# The graphical session: a process whose environment names a display whose socket
# exists. Processes of ordinary users before root's, newest first (with several users,
# the user of logind's active seat session first).
s_uid='' s_gid='' s_disp='' s_xauth='' s_wl='' s_xrd='' s_kind=''
proc_ids() {  # $1 = /proc/PID: sets uid gid (real ids); stops early (read is slow)
    uid='' gid=''
    while read -r key a _; do
        case $key in Uid:) uid=$a ;; Gid:) gid=$a; break ;; esac
    done < "$1/status"
    [ -n "$uid" ] && [ -n "$gid" ]
}
consider() {  # $1 = /proc/PID/environ; sets s_* and succeeds when its display is usable
    d='' xa='' wl='' xrd=''
    while IFS= read -r line; do
        case $line in
            DISPLAY=*) [ -n "$d" ] || d=${line#DISPLAY=} ;;
            XAUTHORITY=*) [ -n "$xa" ] || xa=${line#XAUTHORITY=} ;;
            WAYLAND_DISPLAY=*) [ -n "$wl" ] || wl=${line#WAYLAND_DISPLAY=} ;;
            XDG_RUNTIME_DIR=*) [ -n "$xrd" ] || xrd=${line#XDG_RUNTIME_DIR=} ;;
        esac
    done <<EOT
$(tr '\0' '\n' < "$1" 2>/dev/null)
EOT
    case $xa in /*) ;; *) xa= ;; esac
    case $xrd in /*) ;; *) xrd= ;; esac
    local_x=''
    case $d in
        :[0-9]*)
            n=${d#:}; n=${n%%.*}
            case $n in *[!0-9]*) ;; *) [ -S "/tmp/.X11-unix/X$n" ] && local_x=1 ;; esac ;;
    esac
    if [ -n "$wl" ] && [ -n "$xrd" ]; then
        case $wl in /*) sock=$wl ;; */*) sock= ;; *) sock=$xrd/$wl ;; esac
        if [ -n "$sock" ] && [ -S "$sock" ]; then
            s_kind=wayland s_uid=$uid s_gid=$gid s_wl=$wl s_xrd=$xrd s_disp='' s_xauth=''
            [ -n "$local_x" ] && s_disp=$d s_xauth=$xa
            return 0
        fi
    fi
    [ -n "$local_x" ] || return 1
    s_kind=x11 s_uid=$uid s_gid=$gid s_disp=$d s_xauth=$xa s_wl='' s_xrd=$xrd
    return 0
}
find_session() {
    # (grep's status is 2 when a process vanished while it ran: only the list counts)
    cands=$(grep -l -s -z -E '^(DISPLAY|WAYLAND_DISPLAY)=' /proc/[0-9]*/environ)
    [ -n "$cands" ] || return 1
    # "UID GID /proc/PID/environ" (the owner of a process's files)
    # shellcheck disable=SC2086 # one argument per file: the names are /proc/PID/environ
    cands=$(stat -c '%u %g %n' $cands 2>/dev/null)
    # Several users with display variables: any of them could fake a session, so prefer
    # the user of the seat's active session when logind can tell.
    users='' want=''
    while read -r u _ _; do
        [ "$u" = 0 ] && continue
        case " $users " in *" $u "*) ;; *) users="$users $u" ;; esac
    done <<EOT
$cands
EOT
    case $users in *" "*" "*)
        if have loginctl; then
            active=$(loginctl show-seat seat0 -p ActiveSession --value 2>/dev/null)
            [ -n "$active" ] && want=$(loginctl show-session "$active" -p User --value \
                2>/dev/null)
        fi ;;
    esac
    # The newest process first: usually it is the session (no sorting needed).
    best='' bestpid=0
    while read -r uid gid f; do
        if [ -z "$f" ] || [ "$uid" = 0 ]; then continue; fi
        [ -n "$want" ] && [ "$uid" != "$want" ] && continue
        p=${f#/proc/}
        p=${p%/environ}
        [ "$p" -gt "$bestpid" ] && bestpid=$p best="$uid $gid $f"
    done <<EOT
$cands
EOT
    if [ -n "$best" ]; then
        read -r uid gid f <<EOT
$best
EOT
        consider "$f" && return 0
    fi
    # Else every process, newest first, then root's.
    cands=$(printf '%s\n' "$cands" | sort -t/ -k3,3nr)
    root_env=''
    for _ in 1 2; do
        while read -r uid gid f; do
            [ -n "$f" ] || continue
            if [ "$uid" = 0 ]; then
                [ -n "$root_env" ] || root_env=$f
                continue
            fi
            [ -n "$want" ] && [ "$uid" != "$want" ] && continue
            consider "$f" && return 0
        done <<EOT
$cands
EOT
        [ -n "$want" ] || break
        want=''
    done
    [ -n "$root_env" ] && proc_ids "${root_env%/environ}" 2>/dev/null \
        && consider "$root_env" && return 0
    return 1
}

user_name='' user_home=''
lookup_user() {
    while IFS=: read -r n _ u _ _ h _; do
        if [ "$u" = "$s_uid" ]; then user_name=$n user_home=$h; return 0; fi
    done < /etc/passwd
    return 1
}
session_env() {  # the tool gets PATH (from the agent's env) and the session's variables only
    [ -n "$user_home" ] && export HOME="$user_home"
    [ -n "$s_disp" ] && export DISPLAY="$s_disp"
    [ -n "$s_xauth" ] && export XAUTHORITY="$s_xauth"
    [ -n "$s_wl" ] && export WAYLAND_DISPLAY="$s_wl"
    [ -n "$s_xrd" ] && export XDG_RUNTIME_DIR="$s_xrd"
    :
}
as_user() {  # as_user CMD [ARG]...: CMD as the session's user
    proc_ids /proc/self  # this shell's own ids (read here: slow under emulation)
    if [ "$s_uid" = "$uid" ]; then "$@"; return; fi
    # util-linux setpriv (busybox's, a symbolic link, cannot change ids)
    for sp in /usr/bin/setpriv /bin/setpriv /usr/sbin/setpriv /sbin/setpriv; do
        if [ ! -x "$sp" ] || [ -L "$sp" ]; then continue; fi
        if [ -n "$user_name" ]; then
            "$sp" --reuid="$s_uid" --regid="$s_gid" --init-groups -- "$@"
        else
            "$sp" --reuid="$s_uid" --regid="$s_gid" --clear-groups -- "$@"
        fi
        return
    done
    if [ -n "$user_name" ] && have runuser; then runuser -u "$user_name" -- "$@"; return; fi
    if [ -n "$user_name" ] && have su; then
        # shellcheck disable=SC2016 # expanded by the user's shell: it runs our argv as is
        su -s /bin/sh "$user_name" -c 'exec "$0" "$@"' "$@"; return
    fi
    # No way to change ids: root can still reach the display with the session's cookie.
    "$@"
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
describe() { say "hc-session=$s_kind ${s_wl:-$s_disp} uid=$s_uid"; }
if [ "$action" = push ]; then
    if find_session; then
        lookup_user
        describe
        if pick_tool; then
            # The tool forks a holder that keeps its stdout/stderr open: they must not be
            # the agent's pipes. Its error message goes to a file in the private directory.
            err=/dev/null
            private_dir 2>/dev/null && err=$fbdir/.tool-error
            session_env
            case $tool in
                wl) as_user wl-copy >/dev/null 2>"$err" ;;
                xclip) as_user xclip -selection clipboard -i >/dev/null 2>"$err" ;;
                xsel) as_user xsel --clipboard --input >/dev/null 2>"$err" ;;
            esac
            rc=$?
            if [ "$rc" = 0 ]; then say "hc-method=$tool"; exit 0; fi
            msg=''
            [ "$err" = /dev/null ] || IFS= read -r msg < "$err"
            say "$tool failed (exit $rc): $msg"
            exit 20
        fi
        say "hc-note=$notool"
    fi
    fallback
elif [ "$action" = pull ]; then
    if find_session; then
        lookup_user
        describe
        if pick_tool; then
            say "hc-method=$tool"
            session_env
            # These do not fork: their stderr is the agent's (an empty clipboard is an error
            # message there, recognised by the host).
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
fi
say "unknown action"
exit 2
