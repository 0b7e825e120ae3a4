DROP TABLE front_page;
