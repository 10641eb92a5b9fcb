# %postun of the mysql-snapshot .rpm: on the last erase ($1 = 0, not an upgrade), removes the
# info file directory %post created, with the last snapshot's info file. Never the database.
if [ "$1" -eq 0 ]; then
	rm -rf /var/lib/mysql-snapshot
fi
