# Shared helpers of the guest's scripts (sourced).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

# say LINE: print LINE on the console and, when the console is not the first serial port, on
# ttyS0 too (the markers must reach the serial console whatever console= says).
say() {
	echo "$*" > /dev/console 2>/dev/null
	case " $(cat /sys/class/tty/console/active 2>/dev/null) " in
	*" ttyS0 "*) ;;
	*) echo "$*" > /dev/ttyS0 2>/dev/null ;;
	esac
}

# marker LINE: a marker line, preceded by a line break so that it starts a line even when the
# console shell's prompt (or someone's typing) is on the current line.
marker() { say "
$*"; }

# log LINE: prefixed informational line
log() { say "virtshim-guest: $*"; }
