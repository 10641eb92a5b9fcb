# %post of the mysql-snapshot .rpm: creates the directory of the info file, which
# cargo-generate-rpm cannot ship as an empty 0700 directory. Never touches the database.
install -d -m 0700 -o root -g root /var/lib/mysql-snapshot
