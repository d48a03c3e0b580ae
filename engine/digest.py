"""digest: qmail-ldap's password hash tool (digest.c), for writing userPassword values.

`digest [-c] [-b | -5 | -f cryptformat] [-s base64Salt] [-S hexSalt] [-t type] passwd`
prints `{SCHEME}hash` for every scheme qmail-ldap checks (crypt md4 md5
ns-mta-md5 smd5 sha ssha rmd160), or only for `-t type`. The salt is 18
random bytes unless given: smd5/ssha append all of it, ns-mta-md5 uses the
hex of its first 16 bytes, crypt fills the X's of the crypt format (default
`XX`, DES; -5 `$1$XXXXXXXX$`, -b `$2a$07$` + 22... X's) with its base64.
`digest -v password hashedPassword` compares, as the directory check does.
"""

import base64
import binascii
import getopt
import os
import sys

from engine import passwd

SCHEMES = ["crypt", "md4", "md5", "ns-mta-md5", "smd5", "sha", "ssha", "rmd160"]
FORMATS = {"-5": "$1$XXXXXXXX$", "-b": "$2a$07$XXXXXXXXXXXXXXXXXXXXXXXX"}
RANDOM_SALT = 18
USAGE = ("usage:\tdigest [ -c ] [ -b | -5 | -C | -f cryptformat ] [ -s base64Salt ]\n"
         "\t[ -S hexSalt ] [ -t type ] passwd\n\tdigest -v password hashedPassword\n")


def usage():
    sys.stderr.write(USAGE)
    sys.exit(1)


def crypt_setting(cformat, salt):
    """feed_crypt(): the format's run of X's replaced by as many base64 characters of the salt;
    "" (crypt then fails) when the format has no X or the salt is too short for it."""
    start = cformat.find("X")
    if start < 0:
        return ""
    end = start
    while end < len(cformat) and cformat[end] == "X":
        end += 1
    count = end - start
    if count * 3 > len(salt) * 4:
        return ""
    return cformat[:start] + base64.b64encode(salt[:count]).decode()[:count]


def hashed(scheme, clear, salt, cformat):
    """The value after {SCHEME}, or None when this scheme cannot be made with this salt/format."""
    try:
        if scheme == "crypt":
            setting = crypt_setting(cformat, salt)
            value = passwd.make(clear, "crypt", setting) if setting else None
        elif scheme == "ns-mta-md5":
            value = passwd.make(clear, scheme, salt[:16].hex()) if len(salt) >= 16 else None
        elif scheme in ("smd5", "ssha"):
            value = passwd.make(clear, scheme, salt) if len(salt) >= 4 else None
        else:
            value = passwd.make(clear, scheme)
    except (TypeError, ValueError):
        return None
    return value[value.index("}") + 1:] if value else None


def parse_salt(opt, arg):
    try:
        return base64.b64decode(arg, validate=True) if opt == "-s" else bytes.fromhex(arg)
    except (binascii.Error, ValueError):
        sys.stderr.write(f"digest: bad {'base64' if opt == '-s' else 'hex'} string.\n")
        usage()


def verify(clear, stored):
    scheme = stored[1:stored.find("}")].lower() if stored.startswith("{") and "}" in stored else None
    if scheme is not None and scheme not in SCHEMES:
        print("digest: cmp_password: illegal hashed password.")
        return 1
    print("passwords are equal." if passwd.check(clear, stored) else "passwords are NOT equal.")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts, args = getopt.getopt(argv, "5bcf:s:S:t:v")
    except getopt.GetoptError:
        usage()
    cformat, salt, schemes, check_mode = "XX", None, SCHEMES, False
    for opt, arg in opts:
        if opt in FORMATS:
            cformat = FORMATS[opt]
        elif opt == "-f":
            cformat = arg
        elif opt in ("-s", "-S"):
            salt = parse_salt(opt, arg)
        elif opt == "-t":
            if arg.lower() not in SCHEMES:
                sys.stderr.write("digest: bad digest type, use one of:\n" + "".join(f"\t{s}\n" for s in SCHEMES))
                return 1
            schemes = [arg.lower()]
        elif opt == "-v":
            check_mode = True
        elif opt == "-c":
            check_mode = False
    if check_mode:
        if len(args) != 2:
            usage()
        return verify(args[0], args[1])
    if len(args) != 1:
        usage()
    salt = os.urandom(RANDOM_SALT) if salt is None else salt
    for scheme in schemes:
        value = hashed(scheme, args[0], salt, cformat)
        print(f"{{{scheme.upper()}}}{value}" if value is not None else f"{scheme} failed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
